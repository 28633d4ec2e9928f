"""The Azure ML workspace client, from arguments or ./config.json."""

from __future__ import annotations

from .errors import UserError


def ml_client(subscription: str | None = None, resource_group: str | None = None, workspace: str | None = None):
    """An MLClient with DefaultAzureCredential; UserError (one line) when no workspace is named or found."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    try:
        if subscription and resource_group and workspace:
            return MLClient(credential, subscription, resource_group, workspace)
        return MLClient.from_config(credential)
    except Exception as exc:  # no or malformed config.json
        raise UserError(f"no workspace ({exc.__class__.__name__}); pass --subscription, --resource-group and "
                        "--workspace, or put the workspace's config.json here") from None
