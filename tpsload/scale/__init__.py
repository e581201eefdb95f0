"""One run spread over processes or Ray actors: split the load, run each share, merge the records."""
