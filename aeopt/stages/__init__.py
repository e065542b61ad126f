"""What `aeopt train | finetune | baseline | compare` do, as plain functions over configs."""
