"""Tasks make examples: the synthetic lookup sheets (lookup), RULER-style needles (needles), multi-session
conversations (conversation), over public-domain haystacks (haystack, corpora/).
"""
