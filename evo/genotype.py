"""The genotype of a VAE: encoder widths, latent size, decoder widths.

Its text form is the one of the paper's Table I: ``850|20|1000`` or
``200,500|20|1000,650,50`` - encoder widths, ``|``, latent size, ``|``,
decoder widths. Genotypes are frozen: variation operators build new ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Genotype", "GenotypeError", "parse_genotype"]

_TEXT_LIMIT = 256
_INT = re.compile(r"[0-9]+")


class GenotypeError(ValueError):
    """A genotype text or value that does not describe a valid VAE."""


@dataclass(frozen=True, slots=True)
class Genotype:
    encoder: tuple[int, ...]
    latent: int
    decoder: tuple[int, ...]
    _text: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        for name in ("encoder", "decoder"):
            widths = getattr(self, name)
            if not isinstance(widths, tuple):
                raise GenotypeError(f"{name} widths must be a tuple of ints, got {type(widths).__name__}")
            if not widths:
                raise GenotypeError(f"{name} needs at least one hidden layer")
            for w in widths:
                if type(w) is not int or w < 1:
                    raise GenotypeError(f"{name} width {w!r} is not a positive integer")
        if type(self.latent) is not int or self.latent < 1:
            raise GenotypeError(f"latent size {self.latent!r} is not a positive integer")
        text = f"{','.join(map(str, self.encoder))}|{self.latent}|{','.join(map(str, self.decoder))}"
        object.__setattr__(self, "_text", text)  # the text form is asked for often (task ids, logs, the wire)

    @classmethod
    def parse(cls, text: str) -> Genotype:
        return parse_genotype(text)

    def __str__(self) -> str:
        return self._text

    @property
    def depth(self) -> tuple[int, int]:
        """Number of hidden layers of (encoder, decoder)."""
        return len(self.encoder), len(self.decoder)

    def parameter_count(self, input_dim: int) -> int:
        """Weights and biases of the VAE this genotype builds for ``input_dim`` inputs."""
        count, previous = 0, input_dim
        for width in self.encoder:
            count += previous * width + width
            previous = width
        count += 2 * (previous * self.latent + self.latent)  # mu and log-variance heads
        previous = self.latent
        for width in self.decoder:
            count += previous * width + width
            previous = width
        return count + previous * input_dim + input_dim


def _widths(part: str, what: str, text: str) -> tuple[int, ...]:
    items = part.split(",")
    for item in items:
        if not _INT.fullmatch(item.strip()):
            raise GenotypeError(
                f"bad genotype {text!r}: {what} has {item.strip()!r} where a positive integer width belongs"
                " (expected e.g. '200,500|20|1000,650,50')"
            )
    return tuple(int(item) for item in items)


def parse_genotype(text: object) -> Genotype:
    """Parse the paper's text form ``ENC|LATENT|DEC`` (widths comma-separated)."""
    if not isinstance(text, str):
        raise GenotypeError(f"a genotype text must be a str, got {type(text).__name__}")
    if len(text) > _TEXT_LIMIT:
        raise GenotypeError(f"bad genotype: text is {len(text)} characters, the limit is {_TEXT_LIMIT}")
    parts = text.strip().split("|")
    if len(parts) != 3:
        raise GenotypeError(
            f"bad genotype {text!r}: expected three '|'-separated parts ENCODER|LATENT|DECODER,"
            f" e.g. '850|20|1000', got {len(parts)}"
        )
    encoder = _widths(parts[0], "the encoder", text)
    latent = _widths(parts[1], "the latent size", text)
    if len(latent) != 1:
        raise GenotypeError(f"bad genotype {text!r}: the latent part must be one integer, got {parts[1]!r}")
    decoder = _widths(parts[2], "the decoder", text)
    try:
        return Genotype(encoder, latent[0], decoder)
    except GenotypeError as exc:
        raise GenotypeError(f"bad genotype {text!r}: {exc}") from None
