//! Host-side f32 tensors: what files hold and what crosses to and from a device.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{EngineError, Result};

/// A dense row-major f32 array on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not match {} values",
            data.len()
        );
        Self { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self::new(shape, vec![0.0; n])
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Uploads to `device` as a rank-`D` tensor.
    pub fn to_device<const D: usize>(&self, device: &Device) -> Result<Tensor<D>> {
        if self.shape.len() != D {
            return Err(EngineError::Mismatch(format!(
                "expected a rank-{D} tensor, got shape {:?}",
                self.shape
            )));
        }
        Ok(Tensor::from_data(
            TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        ))
    }

    /// Reads a device tensor back (synchronises with the device).
    pub fn from_tensor<const D: usize>(tensor: Tensor<D>) -> Self {
        let shape = tensor.dims().to_vec();
        let data = tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 data");
        Self { shape, data }
    }

    /// The `i`-th slice along the first axis.
    pub fn index0(&self, i: usize) -> HostTensor {
        let inner: usize = self.shape[1..].iter().product();
        HostTensor::new(
            self.shape[1..].to_vec(),
            self.data[i * inner..(i + 1) * inner].to_vec(),
        )
    }

    /// Rows `idx` of a `[N, …]` tensor, as a batch.
    pub fn rows(&self, idx: &[usize]) -> HostTensor {
        let per: usize = self.shape[1..].iter().product();
        let mut data = Vec::with_capacity(per * idx.len());
        for &i in idx {
            data.extend_from_slice(&self.data[i * per..(i + 1) * per]);
        }
        let mut shape = self.shape.clone();
        shape[0] = idx.len();
        HostTensor::new(shape, data)
    }

    /// ‖self − reference‖ / ‖reference‖, in f64; NaN anywhere gives NaN.
    pub fn relative_error(&self, reference: &HostTensor) -> f64 {
        assert_eq!(self.shape, reference.shape, "shapes differ");
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (a, b) in self.data.iter().zip(&reference.data) {
            let d = *a as f64 - *b as f64;
            num += d * d;
            den += (*b as f64) * (*b as f64);
        }
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// Uploads class labels as an int tensor `[B]`.
pub fn labels_to_device(labels: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(labels.to_vec(), [labels.len()]), device)
}

/// Standard-normal noise from a seed, generated on the host so that every device gets the
/// same numbers.
pub fn seeded_noise(shape: Vec<usize>, seed: u64) -> HostTensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    HostTensor::new(shape, data)
}
