"""hf_gru: GRU text classifiers that are first-class `transformers` models.

Importing the package registers the model family with the Auto classes. `save_pretrained` writes `auto_map` and
copies `configuration_gru.py` / `modeling_gru.py` next to the weights (`GRUPreTrainedModel.save_pretrained`): a
saved model then loads with `trust_remote_code=True` where `hf_gru` is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_gru import GRUConfig
from .modeling_gru import GRUForSequenceClassification, GRUModel, GRUPreTrainedModel, GRUReferenceLayer

__version__ = "0.1.0"

AutoConfig.register(GRUConfig.model_type, GRUConfig, exist_ok=True)
AutoModel.register(GRUConfig, GRUModel, exist_ok=True)
AutoModelForSequenceClassification.register(GRUConfig, GRUForSequenceClassification, exist_ok=True)

__all__ = [
    "GRUConfig",
    "GRUForSequenceClassification",
    "GRUModel",
    "GRUPreTrainedModel",
    "GRUReferenceLayer",
    "__version__",
]
