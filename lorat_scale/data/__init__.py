"""Training and tracking data: readers, sequences, crops, augmentation, pair sampling, shards."""
