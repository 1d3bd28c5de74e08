"""Where public backbones go in the All-in-one module tree (`Family.backbone_layout`, spec §6.2).

A timm ViT / DeiT fills transformer/* (dist_token for the distilled S); pos_embed's patch grid is
resized bilinearly (align_corners) when the image size differs; temporal_embed starts at zero. The
reference loads no BERT weights (its text embeddings start fresh), so init.bert_dir is refused.
"""
from vlx.convert.backbones import Layout

_FRESH = "fresh init as the reference (spec §6.2: only the ViT is pretrained)"
BACKBONE_LAYOUT = Layout(
    text="text_embeddings/", mlm_head="mlm_score/", video="transformer/",
    patch_embed="patch_embed/proj", temporal_attn=False, zeros="temporal_embed",
    zeros_reason="zeros (All-in-one's temporal_embed init, spec §6.2)", resize_pos=True,
    no_bert=("All-in-one's reference loads no BERT weights: its text embeddings start fresh "
             "(spec §3.1, §6.2; bert-base-uncased is only the tokenizer); leave init.bert_dir "
             "empty"),
    vit_hint=("; All-in-one-S expects deit_small_distilled_patch16_224, Ti "
              "deit_tiny_patch16_224, B vit_base_patch16_224"),
    reasons=tuple((top, _FRESH) for top in (
        "text_embeddings", "token_type_embeddings", "pooler", "mlm_score", "itm_score",
        "rank_head", "vqa_classifier", "mc_vqa_classifier", "txt_proj", "vid_proj",
        "vcop_head")))
