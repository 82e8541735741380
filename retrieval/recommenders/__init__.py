"""Every served recommender, the learned ranker and "goes well with" (eval/ imports them from here).

    data        purchases indexed per shopper (TrainData, History), same-day merging
    models      popularity, repeat, tf-idf kNN, ALS / BPR (implicit), content, hybrid
    others      other colours of bought products
    ranker      candidates from several sources + LightGBM LambdaRank
    factory     RecommendConfig (`recommend:` section) and create_recommender
    serve       the configured model fitted on the catalog, answering histories with reasons
    reasons     history-based reasons ("You bought this jeans in blue in March 2020.")
    complement  "goes well with" from co-occurrence (rooms, outfits) or baskets
"""
from retrieval.recommenders.context import ModelContext
from retrieval.recommenders.data import History, TrainData, bought_mask, chronological, merge_same_day, recency_weights
from retrieval.recommenders.factory import DEFAULT_MODELS, KINDS, RecommendConfig, create_recommender, drop_unbuildable
from retrieval.recommenders.models import (ALS, BPR, Content, Hybrid, Popularity, Recommender, Repeat, TfidfKNN, blend,
                                           standardise)
from retrieval.recommenders.others import OtherColours
from retrieval.recommenders.ranker import Ranker, RankerParams

__all__ = ["ALS", "BPR", "Content", "DEFAULT_MODELS", "History", "Hybrid", "KINDS", "ModelContext", "OtherColours", "Popularity",
           "Ranker", "RankerParams", "RecommendConfig", "Recommender", "Repeat", "TfidfKNN", "TrainData", "blend", "bought_mask",
           "chronological", "create_recommender", "drop_unbuildable", "merge_same_day", "recency_weights", "standardise"]
