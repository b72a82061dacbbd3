"""Corpora: readers of parallel text (prefix files, TSV, Parquet; local or remote), text
files, the sentencepiece tokenizer, sentence splitting for documents, and generated corpora
for tests and demos."""
