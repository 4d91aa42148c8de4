"""Training: losses, generator/discriminator steps, the loop, checkpoints, distributed set-up."""
