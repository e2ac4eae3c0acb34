"""The study's Keras baselines (small CNN, VGG16, EfficientNetB0, InceptionV3) as first-class runs:
`archs` (the architectures as one table, the models), `data` (decoded crops, tf.data), `trainer`, `reference`."""
