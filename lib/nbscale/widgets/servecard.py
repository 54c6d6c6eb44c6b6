"""The card of a served model with a test panel: send N rows of the model's own training data to the
service's URL and see the predictions and the latency; Refresh redraws the front's counters. The
buttons call `nbscale.serving.predict`; the counters are the front's."""
from __future__ import annotations

import html


class ServeCard:
    def __init__(self, service):
        import ipywidgets as w

        self.service = service
        self.body = w.HTML(service._repr_html_())
        self.rows = w.BoundedIntText(value=8, min=1, max=1024, description="rows", layout=w.Layout(width="150px"))
        self.send_button = w.Button(description="Send", icon="paper-plane", tooltip="POST rows of the training data to the service")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.result = w.HTML()
        self.send_button.on_click(lambda _b: self.send())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.widget = w.VBox([self.body, w.HBox([self.rows, self.send_button, self.refresh_button]), self.result])

    def send(self) -> None:
        from .. import serving

        try:
            answer = serving.predict(self.service.name, serving.sample_rows(self.service, self.rows.value))
            self.result.value = f"<code>{html.escape(repr(answer))}</code>"
        except Exception as exc:  # noqa: BLE001 - shown on the card, the notebook goes on
            self.result.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
        self.refresh()

    def refresh(self) -> None:
        self.body.value = self.service._repr_html_()


def show_service(service) -> None:
    """How a Service displays in a kernel with nbscale loaded: the live widget where widgets run; the card
    as HTML and a line of text where they do not."""
    from IPython.display import display

    bundle = ServeCard(service).widget._repr_mimebundle_()
    bundle.update({"text/html": service._repr_html_(), "text/plain": repr(service)})
    display(bundle, raw=True)
