"""Results to people and files: the console, and one module per format (json, jsonl, csv, markdown, html, png, svg)."""
