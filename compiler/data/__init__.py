"""Data-aware checks: read the datasets a spec names, enforce their contracts, realise the splits,
and find what would waste a training run or fake its evaluation. numpy and pyarrow are imported
lazily, only when data is read; torch never."""
