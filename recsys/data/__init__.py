"""Sequential-recommendation data: interactions + items, Amazon 2018 (MiniOneRec release), MovieLens."""

from recsys.data.items import ItemDataModule
from recsys.data.sequences import SeqRecData, SeqRecDataModule, load_amazon18, load_movielens, load_seqrec

__all__ = ["ItemDataModule", "SeqRecData", "SeqRecDataModule", "load_amazon18", "load_movielens", "load_seqrec"]
