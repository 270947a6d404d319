"""Validate a method: score it against every model whose circuit is known.

    from toylab import validate

    def my_method(problem):                 # problem: model, task, clean/corrupted samplers
        ...
        return {"L0H1": 0.9, "L1H1": 0.8}   # node scores; or edge scores, a circuit, ...

    report = validate.score(my_method)       # every zoo model with a truth, every seed
    print(report.table())                    # AUROC, CPR, CMD, ... mean ± std over seeds
    report.write("my_method_report/")        # report.md, report.json, roc.png

The protocol (``protocol``), the metrics (``metrics``), the suite of models (``suite``) and
the built-in baselines (``baselines``; feature graphs: ``graph_baselines``, scored by
``feature_graphs``) each have their own module; ``toylab validate
FILE.py:function`` runs the same from the shell.
"""

from toylab.validate.baselines import BASELINES, DESCRIPTIONS
from toylab.validate.feature_graphs import (
    FeatureGraphScores,
    map_nodes,
    score_feature_graphs,
    score_graph,
    true_feature_circuit,
)
from toylab.validate.harness import HEADLINE, Entry, Report, evaluate, load_method, run_one, score
from toylab.validate.metrics import (
    ROC,
    SIZES,
    Faithfulness,
    FaithfulnessCurve,
    auroc,
    average_precision,
    circuit_overlap,
    precision_recall_at_k,
    roc_curve,
)
from toylab.validate.protocol import (
    Circuit,
    EdgeScores,
    FeatureDirections,
    FeatureGraph,
    Featuriser,
    MethodOutputError,
    NodeScores,
    Problem,
    normalise,
)
from toylab.validate.suite import Subject, load_folder, subjects, zoo_names

__all__ = [
    "FeatureGraphScores",
    "map_nodes",
    "score_feature_graphs",
    "score_graph",
    "true_feature_circuit",
    "BASELINES",
    "DESCRIPTIONS",
    "HEADLINE",
    "Entry",
    "Report",
    "evaluate",
    "load_method",
    "run_one",
    "score",
    "SIZES",
    "ROC",
    "Faithfulness",
    "FaithfulnessCurve",
    "auroc",
    "average_precision",
    "circuit_overlap",
    "precision_recall_at_k",
    "roc_curve",
    "Circuit",
    "EdgeScores",
    "FeatureGraph",
    "Featuriser",
    "FeatureDirections",
    "MethodOutputError",
    "NodeScores",
    "Problem",
    "normalise",
    "Subject",
    "load_folder",
    "subjects",
    "zoo_names",
]
