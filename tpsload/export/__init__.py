"""Result writers: one module per format, each a function from results to a file (`-` = stdout)."""
