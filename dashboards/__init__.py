"""Panel pages. They only read: streams of the shared pipeline and storage queries."""
