"""Mutation engine: the paper's six transforms, mutation records, and the functional fingerprint.

``mutate(cell, rng)`` returns a valid child and a :class:`MutationRecord`;
``fingerprint(cell)`` hashes what the compiled cell computes (torch is imported
only when it is called).
"""

from archsearch.mutation._fingerprint import fingerprint, fingerprint_weights
from archsearch.mutation._mutate import MAX_ATTEMPTS, MutationError, as_generator, mutate
from archsearch.mutation._record import AppliedTransform, MutationRecord, chain_record
from archsearch.mutation._transforms import (
    FORMS,
    TRANSFORM_NAMES,
    Form,
    Rejected,
    TransformContext,
    applicable_kinds,
    apply_transform,
)

__all__ = [
    "FORMS",
    "MAX_ATTEMPTS",
    "TRANSFORM_NAMES",
    "AppliedTransform",
    "Form",
    "MutationError",
    "MutationRecord",
    "Rejected",
    "TransformContext",
    "applicable_kinds",
    "apply_transform",
    "as_generator",
    "chain_record",
    "fingerprint",
    "fingerprint_weights",
    "mutate",
]
