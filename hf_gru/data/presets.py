"""Split names and the Hub datasets known by a short name (``--dataset imdb``)."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
DEMO_REFERENCE = "demo"


@dataclass(frozen=True)
class DatasetPreset:
    """A Hub dataset we know: its id, which columns hold the text (joined by newlines) and the label, which splits."""

    hub_id: str
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    config: str | None = None
    splits: tuple[str, ...] = ("train", "test")  # labelled splits only (sst2's test has label -1: left out)
    task: str = ""


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "imdb": DatasetPreset("stanfordnlp/imdb", task="sentiment, 2 classes"),
    "rotten_tomatoes": DatasetPreset(
        "cornell-movie-review-data/rotten_tomatoes", splits=SPLITS, task="sentiment, 2 classes"
    ),
    "sst2": DatasetPreset(
        "stanfordnlp/sst2", ("sentence",), splits=("train", "validation"), task="sentiment, 2 classes"
    ),
    "yelp_polarity": DatasetPreset("fancyzhx/yelp_polarity", task="sentiment, 2 classes"),
    "yelp_review_full": DatasetPreset("Yelp/yelp_review_full", task="sentiment, 5 stars"),
    "amazon_polarity": DatasetPreset("fancyzhx/amazon_polarity", ("title", "content"), task="sentiment, 2 classes"),
    "emotion": DatasetPreset("dair-ai/emotion", config="split", splits=SPLITS, task="emotion, 6 classes"),
    "tweet_eval_sentiment": DatasetPreset(
        "cardiffnlp/tweet_eval", config="sentiment", splits=SPLITS, task="sentiment, 3 classes"
    ),
    "ag_news": DatasetPreset("fancyzhx/ag_news", task="topic, 4 classes"),
    "dbpedia_14": DatasetPreset("fancyzhx/dbpedia_14", ("title", "content"), task="topic, 14 classes"),
    "yahoo_answers_topics": DatasetPreset(
        "community-datasets/yahoo_answers_topics",
        ("question_title", "question_content", "best_answer"),
        "topic",
        task="topic, 10 classes",
    ),
    "trec": DatasetPreset("CogComp/trec", label_column="coarse_label", task="question type, 6 classes"),
    "banking77": DatasetPreset("PolyAI/banking77", task="intent, 77 classes"),
}
