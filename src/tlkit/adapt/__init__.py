"""Domain adaptation: when the target's inputs differ from the source's and target labels are
scarce or absent. Losses that pull the two feature distributions together during training
(DANN, MMD, CORAL: ``losses``), BatchNorm statistics re-estimated on the target (AdaBN:
``adabn``), and continued masked-language-model pretraining on unlabelled target text
(``pretrain``). tllib's taxonomy: each method is one module with one entry point."""
