"""`make demo`: which pretrained model should we fine-tune? See `experiments.demo.run`."""
