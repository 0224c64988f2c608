"""The study's statistics: per-run outcomes over optimizer steps (`outcomes`), the decision rules (`rules`),
correlations within an LR and the common early window (`within_lr`), unigram/bigram references (`ngram`)."""
