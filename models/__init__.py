"""Pure math and decision logic: no I/O, no clock reads, no globals."""
