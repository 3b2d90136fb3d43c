//! SigLIP image preprocessing: RGB, bicubic resize, scale and normalise.
