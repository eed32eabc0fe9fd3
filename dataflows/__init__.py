"""The streamz graph, its sources, adapters, simulator, replay, terminals and the clock."""
