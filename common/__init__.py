"""What the device, the edge and the converter share, importable anywhere (numpy and the standard
library only): the bundle contract, the service glue, bounded logging."""
