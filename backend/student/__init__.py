"""The scikit-learn student model and its versioned store."""

from backend.student.model import LabelPrediction, StudentModel, decide
from backend.student.store import ModelStore, StoredModel

__all__ = ["LabelPrediction", "ModelStore", "StoredModel", "StudentModel", "decide"]
