"""What is sent: prompts, datasets, the client-side tokenizer, lengths fitted with the server's tokenizer."""
