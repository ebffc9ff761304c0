// An MQTT.js 5.0 subscriber over TCP (Node, no browser): accepts up to 10 topic aliases
// from the server, prints "topic payload" per message (topics as MQTT.js resolved them)
// and "subscribed" once its SUBACK came.
// Usage: node mqtt_subscriber.mjs PORT FILTER...
import mqtt from 'mqtt';

const [port, ...filters] = process.argv.slice(2);
const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
  protocolVersion: 5,
  properties: { topicAliasMaximum: 10 },
  reconnectPeriod: 0,
});
client.on('connect', () => {
  client.subscribe(filters, { qos: 0 }, (err) => {
    if (err) { console.error(`subscribe: ${err}`); process.exit(2); }
    console.log('subscribed');
  });
});
client.on('message', (topic, payload) => console.log(`${topic} ${payload.toString()}`));
client.on('error', (e) => { console.error(`error: ${e.message}`); process.exit(1); });
setTimeout(() => process.exit(3), 30000);
