"""Model weights: registry, download, conversion to torchvision layout, demo weights.

``formats.FORMATS`` holds one record per file format; each names the module that converts,
writes demo files of and detects that format (``plain``, ``moco``, ``swav``, ``pirl``,
``byol``, ``simclr``, which share ``base``). ``convert``, ``demo``, ``inspect``, ``registry``
and the command line (``python -m medtransfer.weights``) are derived from the records.
``sources`` says which files a source is and hashes them; ``download`` fetches them;
``tfbundle`` reads and writes TensorFlow checkpoints without TensorFlow.
"""
