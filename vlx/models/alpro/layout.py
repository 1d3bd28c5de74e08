"""Where public backbones go in the ALPRO module tree (`Family.backbone_layout`, spec §11).

bert-base-uncased fills text/ (text and fusion layers alike) and mlm_head/; an ImageNet ViT fills
the TimeSformer video/, its attn / norm1 also filling temporal_attn / temporal_norm, while
time_embed and every temporal_fc start at zero.
"""
from vlx.convert.backbones import Layout

_HEAD = "ALPRO head: fresh init (spec §11)"
BACKBONE_LAYOUT = Layout(
    text="text/", mlm_head="mlm_head/", video="video/", patch_embed="patch_embed",
    temporal_attn=True, zeros=r"(?:time_embed|blocks/\d+/temporal_fc/(?:kernel|bias))",
    zeros_reason="zeros (TimeSformer from ViT, spec §11)",
    reasons=(
        ("prompter", "the PEM prompter is a separately trained model (spec §9: pre-training loads "
                     "the trained prompter); fill it with init.from_converted"),
        ("temp", "learnable temperature: model.temp_init (spec §11: 0.07)"),
        *((top, _HEAD) for top in ("vision_proj", "text_proj", "itm_head", "pem_head",
                                   "classifier"))))
