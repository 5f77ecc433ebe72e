"""Every key gim writes into an AnnData or a run directory, named once."""

# AnnData keys (scverse convention: one prefix, results under uns[UNS] with their params)
UNS = "gim"
UNS_TRUTH = "gim_truth"
LAYER_MEAN = "gim_mean"
LAYER_TARGET_PROB = "gim_target_prob"
OBS_CONTEXT = "gim_context"
OBS_SIMILARITY = "gim_similarity"
OBS_SOURCE = "gim_source"  # predicted | training_control (cells of a prediction file)
VAR_INPUT_INDEX = "gim_input_index"  # column of a predicted gene in the training input
VAR_MODELED = "gim_modeled"
VARM_POSTERIOR = "gim_target_prob"
VARM_LOG_ODDS = "gim_target_logodds"

# Files of a run directory
MODEL_WEIGHTS = "model.pt"
MODEL_META = "model.json"
METRICS = "metrics.csv"
ANNOTATED = "annotated.h5ad"
REPORT = "report.html"
LOG = "gim.log"
CHECKPOINT = "checkpoint.pt"
EVAL_CSV = "eval_metrics.csv"
EVAL_JSON = "eval_metrics.json"
NOGRAPH = "nograph"  # subfolder: the B = 0 refit made for a split (reused by `gim evaluate`)
