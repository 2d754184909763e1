from transformers import BertConfig


class RemoteConfig(BertConfig):
    model_type = "remote"
