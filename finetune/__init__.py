"""Fine-tune causal LMs with LoRA / QLoRA on the text the tweet_sentiment benchmark scores."""
