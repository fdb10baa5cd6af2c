"""The developers' speed scripts, each run on its own (`python -m bench.speed.X`) and imported by
nothing: gen (the generator), loader (our loaders, MNIST), codec (the decoders), dataloader (ours
against torch's DataLoader), tar_write (the tar writer)."""
