// Page code using the widget's JS API. It loads before consent.js, so it goes
// through the documented stub: callbacks are queued and run once the widget starts.
window.Consent = window.Consent || [];
Consent.push(function (api) {
  function show() {
    document.getElementById('allowed-analytics').textContent = String(api.allowed('analytics'));
    document.getElementById('allowed-marketing').textContent = String(api.allowed('marketing', 'adnetwork'));
  }
  function log(text) {
    var item = document.createElement('li');
    item.textContent = new Date().toLocaleTimeString() + ' ' + text;
    document.getElementById('event-log').append(item);
  }
  show();
  api.onChange(function (state) {
    show();
    log('change: ' + JSON.stringify(state.purposes));
  });
  document.addEventListener('consent:saved', function (event) {
    log('saved by the service: record #' + event.detail.record.sequence);
  });
  document.getElementById('open-settings').addEventListener('click', function () { api.open(); });
  document.getElementById('grant-analytics').addEventListener('click', function () {
    api.set({ analytics: true });
  });
  api.ready.then(function (state) { log('ready: ' + (state.decided ? 'stored choice applied' : 'no choice yet')); });
});
