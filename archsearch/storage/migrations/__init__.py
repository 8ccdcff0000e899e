"""Alembic revisions of the archsearch schema (``archsearch db upgrade``); see :mod:`archsearch.storage._migrate`."""
