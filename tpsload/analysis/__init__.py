"""Numbers in, numbers out (no I/O, no clock): statistics, SLOs, client-health verdict, compare, sweep verdicts."""
