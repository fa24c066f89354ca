"""Who gets told: Prefect automations that post Slack-style JSON (`{"text": …}`) to the webhook in the settings
(ANIMEREC_NOTIFY_URL) when a `retrain` run fails or crashes, and when a run promotes a new champion (the
`animerec.champion.promoted` event the flow emits). `make serve` sets them up; Prefect's server sends them (its
automations and actions services), so a run that dies still gets reported. Both are in the Prefect UI's Automations
page, with the webhook as a block."""

from __future__ import annotations

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.events import emit_event
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from pipeline.registry.promotion import PromotionDecision

BLOCK_NAME = "animerec-notify"
PROMOTED_EVENT = "animerec.champion.promoted"
RUN_ENDED_BADLY = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}


def announce_promotion(model_name: str, decision: PromotionDecision, dataset: str) -> None:
    """The event the "champion promoted" automation reacts to (emitted only when the champion moved)."""
    if not decision.promoted:
        return
    emit_event(event=PROMOTED_EVENT, resource={"prefect.resource.id": f"mlflow.model.{model_name}.{decision.version}",
                                               "prefect.resource.name": f"{model_name} v{decision.version}"},
               payload={"text": f"{model_name} version {decision.version} is the new champion of data set "
                                f"{dataset}: {decision.reason}"})


def _automations(block_id, ui_url: str) -> list[Automation]:
    run_page = ui_url + "/runs/flow-run/{{ flow_run.id }}"
    failed = Automation(
        name="animerec: retrain failed",
        description="Posts to ANIMEREC_NOTIFY_URL when a retrain run fails or crashes.",
        trigger=EventTrigger(expect=RUN_ENDED_BADLY, posture=Posture.Reactive, threshold=1,
                             match_related={"prefect.resource.role": "flow", "prefect.resource.name": "retrain"}),
        actions=[SendNotification(block_document_id=block_id, subject="retrain failed",
                                  body="retrain run {{ flow_run.name }} ended {{ flow_run.state.name }}: "
                                       "{{ flow_run.state.message }} (" + run_page + ")")])
    promoted = Automation(
        name="animerec: new champion", description="Posts to ANIMEREC_NOTIFY_URL when a run promotes a new champion.",
        trigger=EventTrigger(expect={PROMOTED_EVENT}, posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject="new champion",
                                  body="{{ event.payload.text }}")])
    return [failed, promoted]


def set_up_notifications(url: str, ui_url: str) -> list[str]:
    """Save the webhook block and create (or replace) the two automations on the configured Prefect server (its UI
    at `ui_url`, for links to the run); their names."""
    block = CustomWebhookNotificationBlock(name=BLOCK_NAME, url=url, json_data={"text": "{{body}}"},
                                           allow_private_urls=True)  # the operator's own URL, often on a LAN
    block_id = block.save(BLOCK_NAME, overwrite=True)
    names = []
    for automation in _automations(block_id, ui_url):
        try:
            Automation.read(name=automation.name).delete()
        except ValueError:
            pass
        automation.create()
        names.append(automation.name)
    return names
