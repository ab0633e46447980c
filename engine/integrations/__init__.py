"""The Walker inside training frameworks: ``sgdwalk.integrations.lightning`` and ``...hf``.

Each is an optional extra (``pip install 'sgdwalk[lightning]'``, ``'sgdwalk[hf]'``) and imports its
framework only when used.
"""
