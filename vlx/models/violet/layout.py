"""Where bert-base-uncased goes in the VIOLET module tree (`Family.backbone_layout`, spec §4, 5.1).

The reference builds its text embeddings from BertModel('bert-base-uncased').embeddings, its
cross-modal layers from BertForMaskedLM('bert-base-uncased').bert.encoder and its MLM head from a
separate BertForMaskedLM's `cls` (untied: its own decoder, equal to the word embeddings at the
start). Here they are text/ (BertEmbeddings), encoder/N/ (BertLayers) and mlm_head/ (MlmHead with
its own decoder kernel). The Video Swin is not an ImageNet ViT: it comes from the converted
Kinetics checkpoint through init.from_converted, so init.vit_file is refused.
"""
from vlx.convert.backbones import Layout

_SWIN = "init.from_converted with the converted Video Swin (spec §2.1)"
_HEAD = "VIOLET head: fresh init"
BACKBONE_LAYOUT = Layout(
    text="text/", text_embeddings="text/", text_layers="encoder/", mlm_head="mlm_head/",
    video="video/", untied_mlm_decoder=True,
    no_vit=("VIOLET's video tower is a Video Swin, not an ImageNet ViT: initialise it with "
            "init.from_converted (the Kinetics Video Swin converted with `python -m vlx.convert "
            "--family violet`, spec §2.1)"),
    reasons=(("video", _SWIN),
             ("video_tokens", "VIOLET video embeddings (frame-CLS, position and frame tables, "
                              "LayerNorm): fresh init, not in the Video Swin file (spec §3)"),
             ("fc", _HEAD), ("mvm_head", _HEAD),
             ("dvae", "frozen DALL-E encoder: model.dvae.converted")))
