"""The Azure ML client of a workspace (from arguments or ./config.json) or of a registry."""

from __future__ import annotations

from .errors import UserError


def ml_client(subscription: str | None = None, resource_group: str | None = None, workspace: str | None = None,
              *, registry: str | None = None, credential=None, **client_options):
    """An MLClient (DefaultAzureCredential unless given); UserError (one line) when no workspace is named or found.

    With `registry`, the client of that Azure ML registry: azure-ai-ml looks the
    registry up by name (its subscription and resource group come from there).
    `client_options` go to MLClient (azure-core's, e.g. `transport`).
    """
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    credential = credential or DefaultAzureCredential()
    if registry:
        try:
            return MLClient(credential, registry_name=registry, **client_options)
        except Exception as exc:  # unknown registry, no access, no network
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise UserError(f"--registry {registry}: not found or not reachable ({exc.__class__.__name__}: "
                            f"{first[:200]}); check the name and that you can read it (az ml registry show "
                            f"--name {registry})") from None
    try:
        if subscription and resource_group and workspace:
            return MLClient(credential, subscription, resource_group, workspace, **client_options)
        return MLClient.from_config(credential, **client_options)
    except Exception as exc:  # no or malformed config.json
        raise UserError(f"no workspace ({exc.__class__.__name__}); pass --subscription, --resource-group and "
                        "--workspace, or put the workspace's config.json here") from None
