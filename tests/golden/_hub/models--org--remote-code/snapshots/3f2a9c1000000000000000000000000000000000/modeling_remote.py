from transformers import BertModel


class RemoteModel(BertModel):
    pass
