"""Reading and writing photos and their metadata: the only place that knows about files, numpy and bit depth."""
