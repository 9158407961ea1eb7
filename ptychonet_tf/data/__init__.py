"""Data: image sources, scan files and readers, the TFRecord schema, writer, checker and tf.data pipeline."""
