"""The paper loyalkit implements, as BibTeX and as a link (torch-free, so model cards can cite it)."""

XU_2021_CITATION = """
@inproceedings{xu-etal-2021-beyond,
    title = "Beyond Preserved Accuracy: Evaluating Loyalty and Robustness of {BERT} Compression",
    author = "Xu, Canwen and Zhou, Wangchunshu and Ge, Tao and Xu, Ke and McAuley, Julian and Wei, Furu",
    booktitle = "Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing",
    year = "2021",
    pages = "10653--10659",
}
"""

PAPER_URL = "https://aclanthology.org/2021.emnlp-main.832/"
