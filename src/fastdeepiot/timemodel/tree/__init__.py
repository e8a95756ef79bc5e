"""An interpretable execution-time model: a tree of non-negative linear cost models ("model tree").

One tree per layer family. Internal nodes split on configuration parameters and derived quantities
that explain staircases and cache effects; each leaf is a small linear model

    t_ms = overhead + sum_j c_j * feature_j         (overhead >= 0, c_j >= 0)

over physically meaningful features (FLOPs, bytes read and written, weight bytes, RNN steps). A
leaf's work term is either ``flops`` or one padded variant ``flops_pad{q}`` (the FLOPs the kernel
does when channel widths are rounded up to multiples of q); each leaf picks the variant that fits it
best, which turns a SIMD-width staircase into one linear term.

Fitting minimises *relative* error: the leaf fits are weighted least squares with weights 1/y^2
(squared relative residuals), solved with non-negativity by ``scipy.optimize.nnls``; splits are
chosen greedily by the reduction of the sum of squared relative residuals (candidates ranked by
unconstrained least squares from cumulative Gram matrices, the best few re-scored with NNLS), and
the grown tree is pruned by cost-complexity (weakest-link) pruning whose penalty is chosen by
k-fold cross-validation of the held-out relative error (or, with ``pruning="validation"``, by
reduced-error pruning on a held-out split). Both price held-out rows as ``predict`` does, with the
extrapolation guard; cross-validation scales alpha by each fold tree's root error (rpart's cp).

The package is laid out as scikit-learn's ``tree/``:

    estimator.py    ModelTree: the estimator (settings, fit, predict/apply/score, rules, to/from_dict)
    features.py     featurize(configs): the design matrix of one layer family (staircase columns)
    _validation.py  input checks (X as a DataFrame, positive times, weights, fitted columns)
    _nodes.py       the node structure (a flat list of dicts) and helpers on it
    grow.py         Grower: leaf fits (relative NNLS) and greedy split search
    prune.py        cost-complexity pruning with cross-validated alpha; reduced-error pruning
    route.py        routing rows to leaves, the extrapolation guard, pricing rows as predict does
    export.py       rules (simplified conditions, equations) and the JSON dict

The estimator itself works on any DataFrame (or dict of arrays) of numeric/string columns.
"""

from __future__ import annotations

from fastdeepiot.timemodel.tree._validation import as_frame, check_columns, check_weights, check_y, is_numeric
from fastdeepiot.timemodel.tree.estimator import ModelTree
from fastdeepiot.timemodel.tree.export import FORMAT_VERSION, Rule
from fastdeepiot.timemodel.tree.features import (DEFAULT_LEAF_FEATURES, DEFAULT_QUANTA, WORK_FEATURE,
                                                 add_staircase_features, featurize, featurize_columns)
from fastdeepiot.timemodel.tree.route import EXTRAPOLATION_SLACK

__all__ = ["ModelTree", "Rule", "featurize", "featurize_columns", "add_staircase_features", "as_frame",
           "check_columns", "check_weights", "check_y", "is_numeric", "DEFAULT_QUANTA", "DEFAULT_LEAF_FEATURES",
           "WORK_FEATURE", "EXTRAPOLATION_SLACK", "FORMAT_VERSION"]
