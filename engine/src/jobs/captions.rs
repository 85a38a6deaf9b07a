//! A captioned set's captions, encoded once for training a text model: each image's caption
//! forms as indices into the encodings, and the empty prompt that caption dropout trains (the
//! null condition of guidance).

use rand::Rng;
use rand::rngs::StdRng;

use crate::data::captioned::CaptionedSet;
use crate::error::Result;
use crate::model::text_condition::HostPrompts;
use crate::text::encoder::TextEncoder;

/// Every distinct caption of a set, encoded.
#[derive(Clone, Debug)]
pub struct CaptionBank {
    /// Per image, its caption forms (indices into `encoded`).
    pub forms: Vec<Vec<usize>>,
    /// One prompt each, `[1, T, C]`.
    pub encoded: Vec<HostPrompts>,
    /// The captions as written, by the same index.
    pub text: Vec<String>,
    /// The empty prompt.
    pub null: HostPrompts,
}

impl CaptionBank {
    /// Encodes every distinct caption of `set` with `encoder` (`progress(done, total)` after
    /// each).
    pub fn encode(
        set: &CaptionedSet,
        encoder: &TextEncoder,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let mut text: Vec<String> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let forms: Vec<Vec<usize>> = set
            .captions
            .iter()
            .map(|forms| {
                forms
                    .iter()
                    .map(|c| {
                        *index.entry(c.clone()).or_insert_with(|| {
                            text.push(c.clone());
                            text.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        let mut encoded = Vec::with_capacity(text.len());
        for (i, caption) in text.iter().enumerate() {
            encoded.push(encoder.encode_prompts(std::slice::from_ref(caption))?);
            progress(i + 1, text.len());
        }
        Ok(Self {
            forms,
            encoded,
            text,
            null: encoder.null_prompt()?,
        })
    }

    /// A prompt for each of `images`: one of its caption forms at random, or with probability
    /// `dropout` the empty prompt.
    pub fn draw(&self, images: &[usize], dropout: f64, rng: &mut StdRng) -> HostPrompts {
        let parts: Vec<&HostPrompts> = images
            .iter()
            .map(|&i| {
                let forms = &self.forms[i];
                let form = forms[rng.random_range(0..forms.len())];
                if rng.random_bool(dropout) {
                    &self.null
                } else {
                    &self.encoded[form]
                }
            })
            .collect();
        HostPrompts::stack(&parts)
    }
}
