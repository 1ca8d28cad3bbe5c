//! Fans and gains, computed exactly as `torch.nn.init` computes them.
//!
//! torch does this arithmetic in Python floats (IEEE doubles); so do we, in
//! the same order, so that a bound or standard deviation derived here is the
//! very double torch would pass to `uniform_` or `normal_`.

use std::fmt;

use weightkit_core::CoreError;

use crate::error::InitError;

/// `torch.nn.init._calculate_fan_in_and_fan_out`: `(fan_in, fan_out)` of a
/// weight whose shape is `[out, in, *receptive_field]`.
///
/// `fan_in = shape[1] * prod(shape[2..])`, `fan_out = shape[0] *
/// prod(shape[2..])`. A shape with fewer than two dimensions is an error, as
/// in torch; products that overflow `usize` are an error too.
pub fn fan_in_and_fan_out(shape: &[usize]) -> Result<(usize, usize), InitError> {
    let [out, inp, rest @ ..] = shape else {
        return Err(InitError::FanNeedsTwoDims { rank: shape.len() });
    };
    let receptive = rest
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(CoreError::Overflow)?;
    let fan_in = inp.checked_mul(receptive).ok_or(CoreError::Overflow)?;
    let fan_out = out.checked_mul(receptive).ok_or(CoreError::Overflow)?;
    Ok((fan_in, fan_out))
}

/// Which fan Kaiming initialization preserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FanMode {
    /// Preserve the variance of activations in the forward pass (torch's
    /// default).
    #[default]
    FanIn,
    /// Preserve the variance of gradients in the backward pass.
    FanOut,
}

impl FanMode {
    /// Parses torch's names (`"fan_in"`, `"fan_out"`, any case, as
    /// `_calculate_correct_fan` lowercases them).
    pub fn from_name(name: &str) -> Result<Self, InitError> {
        match name.to_ascii_lowercase().as_str() {
            "fan_in" => Ok(FanMode::FanIn),
            "fan_out" => Ok(FanMode::FanOut),
            _ => Err(InitError::UnknownFanMode(name.to_owned())),
        }
    }

    /// torch's name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            FanMode::FanIn => "fan_in",
            FanMode::FanOut => "fan_out",
        }
    }

    /// `torch.nn.init._calculate_correct_fan`.
    pub fn fan(self, shape: &[usize]) -> Result<usize, InitError> {
        let (fan_in, fan_out) = fan_in_and_fan_out(shape)?;
        Ok(match self {
            FanMode::FanIn => fan_in,
            FanMode::FanOut => fan_out,
        })
    }
}

impl fmt::Display for FanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every nonlinearity `torch.nn.init.calculate_gain` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Nonlinearity {
    /// `linear` (and identity): gain 1.
    Linear,
    /// `conv1d`: gain 1.
    Conv1d,
    /// `conv2d`: gain 1.
    Conv2d,
    /// `conv3d`: gain 1.
    Conv3d,
    /// `conv_transpose1d`: gain 1.
    ConvTranspose1d,
    /// `conv_transpose2d`: gain 1.
    ConvTranspose2d,
    /// `conv_transpose3d`: gain 1.
    ConvTranspose3d,
    /// `sigmoid`: gain 1.
    Sigmoid,
    /// `tanh`: gain 5/3.
    Tanh,
    /// `relu`: gain sqrt(2).
    Relu,
    /// `leaky_relu`: gain sqrt(2 / (1 + slope^2)); Kaiming's default.
    #[default]
    LeakyRelu,
    /// `selu`: gain 3/4.
    Selu,
}

impl Nonlinearity {
    /// All of them, in torch's documentation order.
    pub const ALL: [Nonlinearity; 12] = [
        Nonlinearity::Linear,
        Nonlinearity::Conv1d,
        Nonlinearity::Conv2d,
        Nonlinearity::Conv3d,
        Nonlinearity::ConvTranspose1d,
        Nonlinearity::ConvTranspose2d,
        Nonlinearity::ConvTranspose3d,
        Nonlinearity::Sigmoid,
        Nonlinearity::Tanh,
        Nonlinearity::Relu,
        Nonlinearity::LeakyRelu,
        Nonlinearity::Selu,
    ];

    /// torch's name (the `torch.nn.functional` name).
    pub fn name(self) -> &'static str {
        match self {
            Nonlinearity::Linear => "linear",
            Nonlinearity::Conv1d => "conv1d",
            Nonlinearity::Conv2d => "conv2d",
            Nonlinearity::Conv3d => "conv3d",
            Nonlinearity::ConvTranspose1d => "conv_transpose1d",
            Nonlinearity::ConvTranspose2d => "conv_transpose2d",
            Nonlinearity::ConvTranspose3d => "conv_transpose3d",
            Nonlinearity::Sigmoid => "sigmoid",
            Nonlinearity::Tanh => "tanh",
            Nonlinearity::Relu => "relu",
            Nonlinearity::LeakyRelu => "leaky_relu",
            Nonlinearity::Selu => "selu",
        }
    }

    /// Parses torch's name (exact, case-sensitive, as torch compares).
    pub fn from_name(name: &str) -> Result<Self, InitError> {
        Nonlinearity::ALL
            .into_iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| InitError::UnknownNonlinearity(name.to_owned()))
    }
}

impl fmt::Display for Nonlinearity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The default negative slope of `leaky_relu` when no parameter is given.
pub const DEFAULT_LEAKY_SLOPE: f64 = 0.01;

/// `torch.nn.init.calculate_gain(nonlinearity, param)`: the recommended
/// gain, as the same double torch returns.
///
/// `param` is the negative slope and is used by `LeakyRelu` only (default
/// 0.01); it must be finite.
pub fn calculate_gain(nonlinearity: Nonlinearity, param: Option<f64>) -> Result<f64, InitError> {
    Ok(match nonlinearity {
        Nonlinearity::Linear
        | Nonlinearity::Conv1d
        | Nonlinearity::Conv2d
        | Nonlinearity::Conv3d
        | Nonlinearity::ConvTranspose1d
        | Nonlinearity::ConvTranspose2d
        | Nonlinearity::ConvTranspose3d
        | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2.0f64.sqrt(),
        Nonlinearity::LeakyRelu => {
            let slope = param.unwrap_or(DEFAULT_LEAKY_SLOPE);
            if !slope.is_finite() {
                return Err(InitError::InvalidParameter {
                    scheme: "calculate_gain",
                    name: "negative_slope",
                    value: slope,
                    reason: "must be finite",
                });
            }
            // Python's `slope ** 2` is the correctly rounded square, which
            // is exactly what one multiplication gives.
            (2.0 / (1.0 + slope * slope)).sqrt()
        }
        Nonlinearity::Selu => 3.0 / 4.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fans() {
        assert_eq!(fan_in_and_fan_out(&[3, 5]).unwrap(), (5, 3));
        assert_eq!(fan_in_and_fan_out(&[16, 3, 3, 3]).unwrap(), (27, 144));
        assert_eq!(fan_in_and_fan_out(&[4, 2, 0]).unwrap(), (0, 0));
        assert_eq!(
            fan_in_and_fan_out(&[7]),
            Err(InitError::FanNeedsTwoDims { rank: 1 })
        );
        assert_eq!(
            fan_in_and_fan_out(&[]),
            Err(InitError::FanNeedsTwoDims { rank: 0 })
        );
        assert!(matches!(
            fan_in_and_fan_out(&[2, usize::MAX, 2]),
            Err(InitError::Core(CoreError::Overflow))
        ));
    }

    #[test]
    fn names_round_trip() {
        for n in Nonlinearity::ALL {
            assert_eq!(Nonlinearity::from_name(n.name()).unwrap(), n);
        }
        assert!(Nonlinearity::from_name("gelu").is_err());
        assert_eq!(FanMode::from_name("FAN_OUT").unwrap(), FanMode::FanOut);
        assert!(FanMode::from_name("fan").is_err());
    }
}
