"""Corpus and record IO, one concern per module (import from the module, this file re-exports nothing):

- :mod:`midtrain.data.inputs`: what an input spec names (file, glob, shard dir, hub-layout dir, ``datasets`` dir,
  hub id) and which local files identify it in a run key;
- :mod:`midtrain.data.partition`: the sources laid end to end on one byte axis, and which rank's part owns what;
- :mod:`midtrain.data.lines`: numbered lines of a byte range of a text file, decoded with ``file:line`` errors;
- :mod:`midtrain.data.jsonl`: JSONL records: parse, read, atomic write, fsynced append, torn-tail repair;
- :mod:`midtrain.data.corpus`: streaming, sharded reads of every source kind (``iter_corpus``, ``iter_records``);
- :mod:`midtrain.data.records`: the record conventions every reader follows (``_file``/``_line``, required fields);
- :mod:`midtrain.data.pairs`: a training record as a ``(prompt, body)`` text pair, by format.
"""
