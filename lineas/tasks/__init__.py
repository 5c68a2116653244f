"""What users do with fitted maps, as plain functions (no Hydra): export a merged checkpoint, generate
text or images at several strengths, evaluate toxicity and perplexity, compare maps."""
