"""The settings base class of node and central (issue 16: one copy).

Both read a TOML file in their data directory, then ``BART_…`` environment
variables, then command-line flags, in increasing order of precedence. The
file is merged by each side's ``load()`` (it knows its name and where it is);
this class makes pydantic-settings read only the flags (``init``) and the
environment, never a ``.env`` file or a secrets directory it was not told of.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class FileSettings(BaseSettings):
    """pydantic-settings with two sources: flags (init) beat the environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


__all__ = ["FileSettings"]
