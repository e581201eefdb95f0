"""The measurement core: the client (owns socket and clock), the runner and its schedule, records' token counts,
the client's own instruments."""
