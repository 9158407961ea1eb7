"""Data: image sources, scan files, the TFRecord schema, writer and tf.data pipeline."""
