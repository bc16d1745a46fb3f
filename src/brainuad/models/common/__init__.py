"""What the network kinds share: the paper's encoder/decoder levels, the discriminator, the
losses, the residual scorer and the Lightning base module."""
